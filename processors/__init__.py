"""Stateful stream processors (loyalty, audiences, journeys, delivery) on `processors.runtime`."""
