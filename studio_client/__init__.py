"""Typed Python client for the Portrait Studio public API."""
