"""The studio's management commands: `import_run`."""
