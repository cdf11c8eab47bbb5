"""On-access protection: judge PE files when they are opened (fanotify) or written (inotify)."""
