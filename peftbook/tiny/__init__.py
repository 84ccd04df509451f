"""The tiny world: corpus and task generators, tokenizer training, the pretraining recipe of the base.

``python -m peftbook tiny build`` runs all of it (see ``peftbook.tiny.build``).
"""
