"""refsnn's proofs: tier-1 finite-difference gradient checks (framework-free) and
tier-2 agreement with the frameworks people train with (needs the ``verify`` extra)."""
from .gradcheck import check_directional, gradcheck, GradcheckReport

__all__ = ["check_directional", "gradcheck", "GradcheckReport"]
