"""Schema of the federation sender (numbered SQL files, applied on start)."""
