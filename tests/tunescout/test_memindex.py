"""MemoryIndex: lookups answered from rows in memory, the same as the instance's own, and kept up to date."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dejavu.histogram import histograms_of_rows
from dejavu.postings import Postings
from tunescout.errors import StorageError
from tunescout.storage.base import EXACT_COUNTS_FROM, IdSlot, NewSong
from tunescout.storage.memindex import MemoryIndex
from tunescout.storage.sqlite import SQLiteStore

from .test_snapshot import eventually


def random_song(rng, n: int = 3000, values: int = 4000) -> NewSong:
    """Rows of a few thousand values, so that songs share many of them at many offsets."""
    hashes = rng.integers(0, values, n).astype(np.uint32)
    return NewSong("s", rng.bytes(20).hex(), 60.0, hashes, rng.integers(0, 2500, n).astype(np.int64))


def clip_of(song: NewSong, rng, start: int = 500, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of a clip cut from the song at ``start`` (its rows there), with as many random pairs."""
    near = np.flatnonzero((song.offsets >= start) & (song.offsets < start + 300))[:n]
    hashes = np.r_[song.hashes[near], rng.integers(0, 4000, n).astype(np.uint32)]
    offsets = np.r_[song.offsets[near] - start, rng.integers(0, 300, n)]
    return hashes, offsets


def same_histograms(a, b) -> bool:
    key = lambda hs: sorted((h.song_id, sorted(zip(h.deltas.tolist(), h.counts.tolist()))) for h in hs)  # noqa: E731
    return key(a) == key(b)


def test_packed_grouping_counts_as_the_general_one(rng):
    songs = rng.integers(0, 50, 20_000)
    deltas = rng.integers(-40, 40, 20_000)
    hashes = rng.integers(0, 300, 20_000)
    packed = histograms_of_rows(songs, deltas, hashes, top_k=50)
    general = histograms_of_rows(songs + (1 << 40), deltas, hashes, top_k=50)  # too big to pack
    assert len(packed) == 50 and all(h.counts.sum() > 0 for h in packed)
    assert [(h.song_id, h.deltas.tolist(), h.counts.tolist()) for h in packed] == [
        (h.song_id - (1 << 40), h.deltas.tolist(), h.counts.tolist()) for h in general
    ]


def test_postings_count_and_return_the_rows_of_each_value(rng):
    hashes = rng.integers(0, 100, 5000).astype(np.uint32)
    songs, offsets = rng.integers(0, 7, 5000), rng.integers(0, 1000, 5000)
    postings = Postings.build(hashes, songs, offsets)
    probe = np.array([3, 50, 99, 100, 12345])
    assert postings.counts(probe).tolist() == [int((hashes == v).sum()) for v in probe]
    got_h, got_s, got_o = postings.rows(np.array([3, 50, 777]))
    want = np.isin(hashes, [3, 50])
    assert sorted(zip(got_h.tolist(), got_s.tolist(), got_o.tolist())) == sorted(
        zip(hashes[want].tolist(), songs[want].tolist(), offsets[want].tolist())
    )
    assert Postings.build(np.zeros(0, np.uint32), [], []).counts(probe).tolist() == [0] * 5


def test_lookups_from_memory_equal_the_instances_own(tmp_path, rng):
    store = SQLiteStore(tmp_path / "f.sqlite", IdSlot(0, 1))
    store.ensure_schema("digest-1")
    songs = [random_song(rng) for _ in range(6)]
    ids = [store.add_song(s) for s in songs]
    memory = MemoryIndex(store, refresh_s=30.0)
    memory.refresh()
    assert memory.held.rows == sum(s.hashes.size for s in songs)
    hashes, offsets = clip_of(songs[2], rng)
    from_memory = memory.best_alignments(hashes, offsets, top_k=20)
    assert from_memory[0].song_id == ids[2]  # the clip's song leads: its rows align at offset 500
    assert same_histograms(from_memory, store.best_alignments(hashes, offsets, top_k=20))
    values = np.unique(hashes)
    exact = [sum(int((s.hashes == v).sum()) for s in songs) for v in values]
    assert memory.hash_counts(values).tolist() == [max(n, 1) for n in exact]  # exact (an instance's only from 8)
    common = np.array(exact) >= EXACT_COUNTS_FROM
    assert common.any() and memory.hash_counts(values)[common].tolist() == store.hash_counts(values)[common].tolist()
    mine, theirs = memory.rows(values[:50]), store.rows(values[:50])
    as_set = lambda r: sorted(zip(*(a.tolist() for a in r)))  # noqa: E731
    assert as_set(mine) == as_set(theirs)
    assert mine[0].dtype == np.uint32 and mine[1].dtype == mine[2].dtype == np.int64
    one = memory.rows(values, ids[2])
    assert as_set(one) == as_set(store.rows(values, ids[2])) and set(one[1].tolist()) == {ids[2]}
    memory.close()


def test_changes_through_the_layer_are_seen_at_once_and_others_at_the_next_refresh(tmp_path, rng):
    store = SQLiteStore(tmp_path / "f.sqlite", IdSlot(0, 1))
    store.ensure_schema("digest-1")
    first = random_song(rng)
    first_id = store.add_song(first)
    now = [0.0]
    memory = MemoryIndex(store, refresh_s=30.0, clock=lambda: now[0])
    hashes, offsets = clip_of(first, rng)
    # The first load starts with the layer; the instance answers until it is in.
    assert memory.best_alignments(hashes, offsets, 5)[0].song_id == first_id
    eventually(lambda: memory.held is not None)
    # Added through the layer: held at once, in the segments.
    second = random_song(rng)
    second_id = memory.add_song(second)
    h2, o2 = clip_of(second, rng)
    assert memory.best_alignments(h2, o2, 5)[0].song_id == second_id
    # Added by another writer (another worker): not held until the next refresh is due.
    third = random_song(rng)
    third_id = store.add_song(third)
    h3, o3 = clip_of(third, rng)
    assert third_id not in [h.song_id for h in memory.best_alignments(h3, o3, 5)]
    now[0] = 31.0
    memory.best_alignments(h3, o3, 5)  # starts the refresh
    eventually(lambda: memory.best_alignments(h3, o3, 5)[0].song_id == third_id)
    assert same_histograms(memory.best_alignments(h3, o3, 20), store.best_alignments(h3, o3, 20))
    # Deleted through the layer: gone at once; deleted elsewhere: gone at the next refresh.
    assert memory.delete_song(second_id)
    assert second_id not in [h.song_id for h in memory.best_alignments(h2, o2, 20)]
    assert second_id not in set(memory.rows(np.unique(h2))[1].tolist())
    store.delete_song(first_id)
    now[0] = 62.0
    memory.best_alignments(hashes, offsets, 5)
    eventually(lambda: first_id not in [h.song_id for h in memory.best_alignments(hashes, offsets, 20)])
    assert same_histograms(memory.best_alignments(h3, o3, 20), store.best_alignments(h3, o3, 20))
    memory.close()


def test_many_songs_added_through_the_layer_stay_in_few_segments(tmp_path, rng):
    store = SQLiteStore(tmp_path / "f.sqlite", IdSlot(0, 1))
    store.ensure_schema("digest-1")
    memory = MemoryIndex(store, refresh_s=30.0)
    memory.refresh()
    songs = [random_song(rng, n=500) for _ in range(40)]
    ids = [memory.add_song(s) for s in songs]
    assert len(memory.held.segments) <= 6  # log2 of the songs
    assert memory.held.rows == 40 * 500
    hashes, offsets = clip_of(songs[17], rng, start=200, n=100)
    assert memory.best_alignments(hashes, offsets, 3)[0].song_id == ids[17]
    assert same_histograms(memory.best_alignments(hashes, offsets, 40), store.best_alignments(hashes, offsets, 40))
    memory.close()


def test_a_copy_that_fails_to_refresh_keeps_answering(private_store, rng):
    store, private = private_store
    song = random_song(rng)
    song_id = store.add_song(song)
    now = [0.0]
    memory = MemoryIndex(store, refresh_s=30.0, clock=lambda: now[0])
    memory.refresh()
    hashes, offsets = clip_of(song, rng)
    assert same_histograms(memory.best_alignments(hashes, offsets, 5), store.best_alignments(hashes, offsets, 5))
    private.stop()
    now[0] = 31.0
    assert memory.best_alignments(hashes, offsets, 5)[0].song_id == song_id  # its refresh fails
    memory.refresh()  # so does this one, quietly
    assert memory.best_alignments(hashes, offsets, 5)[0].song_id == song_id
    with pytest.raises(StorageError):
        store.best_alignments(hashes, offsets, 5)  # the instance itself is down
    memory.close()


def engine_config(tmp_path, memory: bool):
    from tunescout.config import config_from_dict

    return config_from_dict(
        {
            "data_dir": str(tmp_path),
            "recognizing": {"memory_index": memory},
            "instances": [{"database_type": "sqlite", "database": {"database": f"fp{i}.sqlite"}} for i in range(2)],
        }
    )


def test_an_engine_with_the_memory_index_answers_as_one_without(tmp_path):
    import io

    from tests.conftest import music_like, wav_bytes
    from tunescout.engine import Engine
    from tunescout.storage.stack import layers

    rng = np.random.default_rng(7)
    songs = [music_like(rng, 30) for _ in range(4)]
    memory = Engine.from_config(engine_config(tmp_path, memory=True))
    assert all(isinstance(s, MemoryIndex) for s in memory.store.stores)
    assert not memory.match.triplets  # the pairs from memory cost less than the triplet keys' lookup
    for store in memory.store.stores:
        store.refresh()  # (an empty copy: what the service starts with on a new index)
    assert memory.recognize(wav_bytes(songs[0][: 5 * 11025])).body()["results"] == []
    ids = [memory.fingerprint(io.BytesIO(wav_bytes(s)), f"song{i}").song_id for i, s in enumerate(songs)]
    plain = Engine.from_config(engine_config(tmp_path, memory=False))
    assert not any(isinstance(layer, MemoryIndex) for s in plain.store.stores for layer in layers(s))
    for i, song in enumerate(songs):
        clip = wav_bytes(song[5 * 11025 : 12 * 11025])
        with_memory, without = memory.recognize(clip).body(), plain.recognize(clip).body()
        assert [r["song_id"] for r in with_memory["results"]][:1] == [ids[i]]
        assert with_memory["results"] == without["results"]
    parts = memory.health().body()["instances"]
    assert [(p["memory_loaded"], p["memory_rows"]) for p in parts] == [
        (True, store.held.rows) for store in memory.store.stores
    ]
    assert sum(p["memory_rows"] for p in parts) > 0
    assert "memory_rows" not in plain.health().body()["instances"][0]
    memory.delete_song(ids[1])
    clip = wav_bytes(songs[1][5 * 11025 : 12 * 11025])
    assert ids[1] not in [r["song_id"] for r in memory.recognize(clip).body()["results"]]
    memory.close()
    plain.close()


def test_merged_postings_hold_every_row_of_the_parts_in_their_order(rng):
    parts_rows = [
        (rng.integers(0, 500, n).astype(np.uint32), rng.integers(0, 9, n), rng.integers(0, 10**6, n))
        for n in (3000, 10, 0, 1700)
    ]
    parts = [Postings.build(*rows) for rows in parts_rows]
    merged = Postings.merged(parts, chunk_rows=100)  # many chunks
    whole = Postings.build(*(np.concatenate([r[i] for r in parts_rows]) for i in range(3)))
    assert merged.values.tolist() == whole.values.tolist() and merged.starts.tolist() == whole.starts.tolist()
    assert merged.songs.tolist() == whole.songs.tolist()  # (a stable sort keeps the parts' order too)
    assert merged.offsets.tolist() == whole.offsets.tolist()


def test_a_first_load_in_many_reads_holds_each_song_once(tmp_path, rng, monkeypatch):
    from tunescout.storage import memindex
    from tunescout.storage.base import StoreLayer

    monkeypatch.setattr(memindex, "LOAD_ROWS", 5000)
    monkeypatch.setattr(memindex, "RARE_WIDTH", 5000 // 16)
    store = SQLiteStore(tmp_path / "f.sqlite", IdSlot(0, 1))
    store.ensure_schema("digest-1")
    songs = [random_song(rng) for _ in range(7)]
    ids = [store.add_song(s) for s in songs]
    late = random_song(rng)

    class WriteDuringLoad(StoreLayer):
        """A song written through the memory index as a refresh runs: committed before the refresh lists
        the songs, held by the layer after the refresh has compared the list with its copy."""

        committed: list[int] = []
        written: list[int] = []

        def list_songs(self, after_id, limit):
            if memory.held is not None and not self.committed:
                self.committed.append(store.add_song(late))
            return super().list_songs(after_id, limit)

        def song_rows(self, song_ids):
            if self.committed and not self.written:
                self.written.append(memory.add_song(late))
            return super().song_rows(song_ids)

        def add_song(self, song):
            return self.committed[0] if song is late else super().add_song(song)

        reads: list[int] = []

        def rows_between(self, lo, hi):
            rows = super().rows_between(lo, hi)
            self.reads.append(rows[0].size)
            return rows

    memory = MemoryIndex(WriteDuringLoad(store), refresh_s=30.0)
    memory.refresh()  # the first load (nothing held yet: the write waits for the next load)
    assert memory.held.rows == 7 * 3000 and len(memory.held.segments) == 1  # read in many, held as one
    assert sum(WriteDuringLoad.reads) == 7 * 3000 and 5 <= sum(n > 0 for n in WriteDuringLoad.reads)
    assert max(WriteDuringLoad.reads) <= 5000  # about LOAD_ROWS a read, never the whole index
    for i in (0, 3, 6):
        hashes, offsets = clip_of(songs[i], rng)
        assert same_histograms(memory.best_alignments(hashes, offsets, 10), store.best_alignments(hashes, offsets, 10))
    store.add_song(random_song(rng))  # another writer: the next load reads it, and the late song is written then
    memory.refresh()
    assert WriteDuringLoad.written
    assert memory.held.song_ids.tolist().count(WriteDuringLoad.written[0]) == 2  # read twice, held once
    assert not memory.held.all_alive
    hashes, offsets = clip_of(late, rng)
    assert memory.best_alignments(hashes, offsets, 3)[0].song_id == WriteDuringLoad.written[0]
    assert same_histograms(memory.best_alignments(hashes, offsets, 20), store.best_alignments(hashes, offsets, 20))
    assert sorted(memory.held.alive_ids()) == sorted(ids + [ids[-1] + 1, WriteDuringLoad.written[0]])
    memory.close()


def test_the_robust_path_reads_the_same_values_from_memory_as_from_the_databases(tmp_path):
    """The copy counts rare values exactly, the databases count values under EXACT_COUNTS_FROM rows
    as 1; the robust path's budget and rarest-first choice were fitted on the latter, and read other
    values from memory (a scan from memory lost plays 2 % fast). A budget that binds shows it."""
    import io

    from scipy import signal

    from tests.conftest import music_like, wav_bytes
    from tunescout.engine import Engine

    rng = np.random.default_rng(11)
    song = music_like(rng, 30)
    memory = Engine.from_config(engine_config(tmp_path, memory=True))
    for store in memory.store.stores:
        store.refresh()
    for gain in (1.0, 0.9, 0.8):  # three copies (other PCM, the same hashes): values of 3 rows beside 1
        memory.fingerprint(io.BytesIO(wav_bytes(gain * song)), f"copy{gain}")
    memory.fingerprint(io.BytesIO(wav_bytes(music_like(rng, 30))), "other")
    plain = Engine.from_config(engine_config(tmp_path, memory=False))
    fast = signal.resample(song[5 * 11025 : 12 * 11025], round(7 * 11025 / 1.05)).astype(np.float32)
    asked = {}
    for name, engine in (("memory", memory), ("plain", plain)):
        engine.searcher.robust = dataclasses.replace(engine.searcher.robust, q_row_budget=14_000, q_row_share=0.0)
        reads, rows = [], engine.store.rows
        engine.store.rows = lambda values, song_id=None, rows=rows, reads=reads: (
            reads.append(np.sort(np.asarray(values))) or rows(values, song_id)
        )
        engine.recognize(wav_bytes(fast))
        asked[name] = reads
    assert asked["memory"] and len(asked["memory"]) == len(asked["plain"])
    assert all(np.array_equal(a, b) for a, b in zip(asked["memory"], asked["plain"]))
    memory.close()
    plain.close()
