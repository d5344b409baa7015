"""Drop-in shims for code written against other trackers' APIs."""

__all__: list[str] = []
