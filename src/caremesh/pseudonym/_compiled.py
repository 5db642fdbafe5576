"""Imported first by `caremesh.pseudonym`: loads the compiled hot modules if a fresh build is
there (`caremesh.native`), before any of them is imported as Python."""

from caremesh.native import install

STATUS = install()
