"""The PE layer: headers and sections (:mod:`.layout`), the attribute certificate table
(:mod:`.certtable`), page-hash tables (:mod:`.pagehash`) and every digest in one pass over the
bytes (:mod:`.hashing`). Import the submodules directly; nothing is loaded here."""
