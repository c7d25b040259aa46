"""Generated data: the world of shapes and sounds mmr-mini is trained and evaluated on
(``world/``) and the corpus of natural sound captions an audio head is bootstrapped from
(``captions/``). Deterministic by seed; imports nothing else from models/."""
