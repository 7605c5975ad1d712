"""Offline import of recorded archives (captures and their REST recordings) into the lake, through the live
decoders, quality rules, books and lake writer: ``archive.py`` drives it, the other modules each do one part."""
