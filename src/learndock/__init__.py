"""learndock: a learnware dock.

A learnware is a trained model plus a specification of what it can do. learndock packs,
checks, stores, searches and reuses them. The public entry points live in the sub-packages:

- :mod:`learndock.spec` -- semantic specs and RKME statistical specs
- :mod:`learndock.package` -- the learnware package format and safe model runtimes
- :mod:`learndock.market` -- the store, submission checks and islands
- :mod:`learndock.search` -- semantic, statistical and mixture search
- :mod:`learndock.reuse` -- reusers (scikit-learn estimators)
"""

__version__ = "0.1.0"
