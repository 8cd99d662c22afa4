"""refsnn's proofs: tier-1 finite-difference gradient checks (framework-free) and
tier-2 agreement with the frameworks people train with (needs the ``verify`` extra).

Installed as ``refsnn.verify`` (setup.py maps this folder to that name); in a checkout it is
also importable as ``verify``. Its modules import each other relatively, so both names work."""
from .gradcheck import check_directional, gradcheck, GradcheckReport

__all__ = ["check_directional", "gradcheck", "GradcheckReport"]
