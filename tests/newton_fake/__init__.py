"""A fake Newton gateway for the tests, built from Newton's documented shapes only."""
