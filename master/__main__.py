"""``python -m master users ...``: the master's maintenance commands (see ``master/users.py``)."""

from __future__ import annotations

import sys

from master import users

COMMANDS = {"users": users.main}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print("usage: python -m master users {add,remove,list,convert} ... (python -m master users --help)",
              file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
