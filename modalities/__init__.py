"""Modalities: each is a folder whose modules register their backbones, data, writers and commands
(``polydiff.registry``); ``nn/`` holds the N-dimensional blocks they all build from."""
