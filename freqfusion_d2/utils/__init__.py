"""Helpers shared by the command-line tools (:mod:`freqfusion_d2.utils.cli`)."""
