"""Real data sets that install offline, shaped for learnware experiments."""
