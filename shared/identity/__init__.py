"""Identity: credentials to a principal (`auth`, `tokens`), server-side sessions, and the
accounts and profiles kept in step with Firebase Auth. Imports the platform layer only."""
