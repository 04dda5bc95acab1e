"""Test support: a replayed board, the bench lab, fabricated run records. Never used by xenlab itself."""
