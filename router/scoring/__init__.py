"""Scoring requests and answers: the difficulty classifier, its features, answer confidence and
the judges that label shadow answers."""
