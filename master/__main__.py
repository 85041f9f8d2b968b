"""``python -m master users|ledger ...``: the master's maintenance commands (``master/users.py``,
``master/ledger.py``)."""

from __future__ import annotations

import sys

from master import ledger, users

COMMANDS = {"users": users.main, "ledger": ledger.main}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print("usage: python -m master users {add,remove,list,convert} ... (python -m master users --help)\n"
              "       python -m master ledger --db-url URL {list,adopt} ... (python -m master ledger --help)",
              file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
