"""The core: tickets, their files, selection, strategies, targets and schedules. Imports nothing above it."""
