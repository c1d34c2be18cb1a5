"""Local attributions: which input features (tokens, words, spans) a prediction depends on."""
