"""runq's engine: everything that is not the command line.

Flow: Guild home on disk -> indexer -> SQLite index; selection arguments ->
parser -> tree -> compiler -> (SQL, params) -> executor -> runs.
"""
