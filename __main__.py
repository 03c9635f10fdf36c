"""`python -m runq`: the runq command."""

from .commands.entry import main

if __name__ == "__main__":
    main()
