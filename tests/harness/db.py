"""Database helpers shared by the proofs."""


class Rollback(Exception):
    """Raised inside ``transaction.atomic()`` to roll the surrounding transaction back."""
