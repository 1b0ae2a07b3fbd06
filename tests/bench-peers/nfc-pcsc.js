// The tap bench's Node peer: nfc-pcsc as its README shows it, printing each card's UID on stdout.
//
// Usage: node nfc-pcsc.js "READER NAME". Prints `ready` once the reader is found,
// `uid HEX` on each card event (nfc-pcsc connects and sends FF CA 00 00 00 itself for
// an ISO 14443-3 card) and `off` when the card is taken away. The bench
// (tests/src/bin/tap-latency.rs) times the lines as they arrive.
'use strict';

const { NFC } = require('nfc-pcsc');

const wanted = process.argv[2];
if (!wanted) {
  console.error('usage: node nfc-pcsc.js "READER NAME"');
  process.exit(2);
}

const nfc = new NFC();

nfc.on('reader', (reader) => {
  // Other readers on the machine are not ours to answer.
  if (reader.name !== wanted) {
    return;
  }
  reader.on('card', (card) => {
    console.log(`uid ${card.uid.toUpperCase()}`);
  });
  reader.on('card.off', () => {
    console.log('off');
  });
  reader.on('error', (err) => {
    console.error(`reader error: ${err}`);
  });
  reader.on('end', () => {
    console.error('reader removed');
    process.exit(1);
  });
  console.log('ready');
});

nfc.on('error', (err) => {
  console.error(`nfc error: ${err}`);
});
