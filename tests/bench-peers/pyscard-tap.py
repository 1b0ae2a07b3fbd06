#!/usr/bin/python3
"""The tap bench's Python peer: pyscard's CardMonitor and a CardObserver, printing each card's UID on stdout.

Usage: python3 pyscard-tap.py "READER NAME". Prints `ready` once the observer is
registered, `uid HEX` for each card that appears (connect, FF CA 00 00 00) and `off`
when it is taken away. This is the way pyscard's user guide monitors cards; the
monitor's thread polls pcscd every 0.1 s. The bench (tests/src/bin/tap-latency.rs)
times the lines as they arrive.
"""

import sys
import threading

from smartcard.CardMonitoring import CardMonitor, CardObserver
from smartcard.util import PACK, toHexString

GET_UID = [0xFF, 0xCA, 0x00, 0x00, 0x00]


class UidPrinter(CardObserver):
    def __init__(self, reader):
        self.reader = reader

    def update(self, observable, actions):
        added, removed = actions
        for card in added:
            # Other readers on the machine are not ours to answer.
            if card.reader != self.reader:
                continue
            connection = card.createConnection()
            try:
                connection.connect()
                data, sw1, sw2 = connection.transmit(GET_UID)
                if (sw1, sw2) == (0x90, 0x00):
                    print("uid", toHexString(data, PACK), flush=True)
                else:
                    print(f"GET UID answered {sw1:02X} {sw2:02X}", file=sys.stderr, flush=True)
                connection.disconnect()
            except Exception as e:  # a card pulled mid-read: the next one still counts
                print(f"could not read the card: {e}", file=sys.stderr, flush=True)
        for card in removed:
            if card.reader == self.reader:
                print("off", flush=True)


def main():
    if len(sys.argv) != 2:
        print('usage: python3 pyscard-tap.py "READER NAME"', file=sys.stderr)
        sys.exit(2)
    monitor = CardMonitor()
    monitor.addObserver(UidPrinter(sys.argv[1]))
    print("ready", flush=True)
    # The monitor's thread is a daemon thread: keep the process alive until killed.
    threading.Event().wait()


if __name__ == "__main__":
    main()
