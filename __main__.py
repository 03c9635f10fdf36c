"""`python -m runq`: the runq command."""

from .commands.app import main

if __name__ == "__main__":
    main()
