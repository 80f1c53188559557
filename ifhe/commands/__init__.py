"""The subcommands of `ifhe`, one module each: `register(sub)` adds the subcommand's parser with its arguments and
binds its command function, which sits next to it. `ifhe.cli` builds the parser from `COMMANDS`, in this order.

The command modules import the engine's torch-dependent modules inside their command functions, not at the top:
building the parser (`ifhe --help`, `ifhe zoo`, `ifhe demo`) then takes a tenth of a second instead of the
2-3 s that importing torch takes.
"""
from . import demo, evaluate, features, reproduce, run, train_teacher, zoo

COMMANDS = (train_teacher, evaluate, run, features, reproduce, demo, zoo)
