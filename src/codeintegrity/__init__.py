"""codeintegrity: judge PE images the way Windows Code Integrity does, offline.

Public entry points: :func:`codeintegrity.verify.verify_path` and
:func:`codeintegrity.verify.verify_bytes` return a :class:`codeintegrity.report.Report`.
"""

__version__ = "0.1.0"
