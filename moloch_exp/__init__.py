"""moloch_exp: competitive-audience misalignment experiments (see README.md)."""
