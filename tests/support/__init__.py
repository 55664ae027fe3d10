"""What the tests share that is not a test: database servers and their settings, child processes, backends."""
