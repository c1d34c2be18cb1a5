"""The demo: contextual decomposition (CD-T) of a real MiniLM sentiment classifier on a sentence."""
