"""Thin Tornado handlers: parse and check input, call the domain code, map errors to pages."""
