"""Exit statuses of `bpsm` (README, "Exit codes"). Configuration errors have their own, so that
a supervisor can tell "fix the configuration" from "crashed, try again": the systemd unit
does not restart on CONFIG (RestartPreventExitStatus=78)."""

OK = 0
FAILED = 1  # the command ran and failed, or `bpsm check` found mistakes
USAGE = 2  # a bad option or argument (click's own status)
NO_STORE = 66  # EX_NOINPUT: the store a reading command was pointed at does not exist
CONFIG = 78  # EX_CONFIG: a bad setting, catalogue or mapping; restarting will not help
