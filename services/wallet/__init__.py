"""Wallet: the double-entry ledger every movement of tokens or money goes through."""
