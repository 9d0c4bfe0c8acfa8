"""Money as integer minor units with a currency; decimal strings only at the edges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of the currencies the platform prices in (PayPal-supported).
EXPONENTS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "AUD": 2,
    "CAD": 2,
    "SGD": 2,
    "MYR": 2,
    "PHP": 2,
    "THB": 2,
    "HKD": 2,
    "NZD": 2,
    "CHF": 2,
    "JPY": 0,
    "TWD": 0,
    "HUF": 0,
}
_DECIMAL = re.compile(r"^\d{1,10}(\.\d{1,3})?$")


class MoneyError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Money:
    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        if self.currency not in EXPONENTS:
            raise MoneyError(f"unsupported currency {self.currency!r}")
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise MoneyError("amount must be an integer number of minor units")

    @classmethod
    def parse(cls, currency: str, value: str) -> Money:
        """From PayPal's shape: a decimal string with no more places than the currency has."""
        if currency not in EXPONENTS:
            raise MoneyError(f"unsupported currency {currency!r}")
        if not _DECIMAL.fullmatch(value):
            raise MoneyError("value must be a plain decimal string such as '25.00'")
        exponent = EXPONENTS[currency]
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise MoneyError("value is not a decimal") from None
        minor = amount.scaleb(exponent)
        if minor != minor.to_integral_value():
            raise MoneyError(f"{currency} has {exponent} decimal places")
        return cls(currency, int(minor))

    @property
    def value(self) -> str:
        exponent = EXPONENTS[self.currency]
        sign = "-" if self.amount_minor < 0 else ""
        whole, frac = divmod(abs(self.amount_minor), 10**exponent)
        return f"{sign}{whole}.{frac:0{exponent}d}" if exponent else f"{sign}{whole}"
