"""Standalone repro folders a runtime's maintainers can run in seconds: the bundle's content (bundle), its
script and ISSUE.md text (templates), and writing the folder without destroying anything (folder)."""
