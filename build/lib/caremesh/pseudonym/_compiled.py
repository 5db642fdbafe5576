"""Imported first by `caremesh.pseudonym`: loads the compiled hot modules if a fresh build is
there (`caremesh.pseudonym.native`), before any of them is imported as Python."""

from caremesh.pseudonym.native import install

STATUS = install()
