"""Experiments that run several trainings and compare them."""
