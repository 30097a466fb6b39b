"""xarch: will this binary actually run on the machines we ship it to?"""

__version__ = "0.1.0"
