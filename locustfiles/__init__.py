"""Locust load profiles against a running minirec server (see README.md in this folder)."""
