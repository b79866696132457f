"""Audiences: CEL conditions over the profile -> audiences.membership ENTER/LEAVE."""
