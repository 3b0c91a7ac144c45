"""What several backends share, below them all: the discrete elimination plan, the log
joint, point optimisation, run placement, param bookkeeping and routing sentences."""
