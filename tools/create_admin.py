"""Create (or promote) an admin account: the first one in a new project, or on the local stack.

    python -m tools.create_admin admin@example.com --send-link          # real project (ADC)
    python -m tools.create_admin admin@example.com --password '...'     # local stack

It talks to whatever the environment points at: with FIRESTORE_EMULATOR_HOST and
FIREBASE_AUTH_EMULATOR_HOST set (as `make dev` sets them) the emulators, otherwise the project
in GOOGLE_CLOUD_PROJECT with application default credentials. An existing account with the
e-mail is promoted to admin, and its sessions are ended so the new role takes effect.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from shared.identity import accounts, profiles
from shared.platform import clients
from shared.platform.context import Role
from shared.platform.errors import ApiError

ACTOR = "cli:create_admin"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("email")
    parser.add_argument("--name", help="display name")
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--password", help="initial password (prompted for if neither option is given)"
    )
    how.add_argument("--send-link", action="store_true", help="e-mail a set-password link instead")
    parser.add_argument("--project", help="project id (default: GOOGLE_CLOUD_PROJECT)")
    args = parser.parse_args(argv)

    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    if not os.environ.get("GOOGLE_CLOUD_PROJECT"):
        print("error: set GOOGLE_CLOUD_PROJECT or pass --project", file=sys.stderr)
        return 2
    from firebase_admin import auth

    target = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST") or "the real Firebase project"
    try:
        existing = auth.get_user_by_email(args.email, app=clients.firebase_app())
    except auth.UserNotFoundError:
        existing = None
    try:
        if existing is not None and profiles.get(existing.uid) is not None:
            accounts.update(
                existing.uid, accounts.AccountChanges(role=Role.ADMIN), actor=ACTOR, by_admin=True
            )
            print(f"{args.email} ({existing.uid}) is now an admin on {target}")
            return 0
        if existing is not None:
            print(
                f"error: {args.email} exists in Auth without a profile; remove it first",
                file=sys.stderr,
            )
            return 1
        password = args.password
        if password is None and not args.send_link:
            password = getpass.getpass("Password for the new admin: ")
        created = accounts.create(
            accounts.NewAccount(
                email=args.email,
                role=Role.ADMIN,
                display_name=args.name,
                password=password,
                send_password_link=args.send_link,
            ),
            actor=ACTOR,
        )
    except ApiError as exc:
        print(f"error: {exc.detail or exc.title} ({exc.code})", file=sys.stderr)
        return 1
    print(f"created admin {args.email} ({created.profile['uid']}) on {target}")
    if created.password_link and accounts.reveal_links():
        print(f"set-password link: {created.password_link}")
    elif args.send_link:
        print("a set-password link is queued for e-mail")
    return 0


if __name__ == "__main__":
    sys.exit(main())
