"""phasetime's version, in one place (the bottom floor, so that every floor can name it)."""

VERSION = "0.4.0"
