"""labfolio: experiments in, lab notebook out."""
__version__ = "0.1.0"
