"""Train RecBole's SASRec on an exported split and score every user's next item.

Runs inside the RecBole venv (``bench/.work/sasrec-venv``: recbole==1.2.1, numpy 1.26), never
imports shortrec. Input ``--data DIR`` holds ``ml/ml.inter`` (the training rows: RecBole
atomic file, ``timestamp`` = the row's position in the user's sequence, so order is exact)
and ``sequences.json`` (``{user_token: [item tokens, oldest first]}``, the history each user
is scored with). RecBole splits ``ml.inter`` leave-one-out itself (last item = its test, the
one before = its validation for early stopping); the held-out items of the caller are never in
``DIR``. Output ``--out FILE.npz``: ``users`` (n,), ``items`` (m,) as ints of the tokens and
``scores`` (n, m) float32 of SASRec's full-catalogue logits (items RecBole never saw are left
out). Prints one JSON line with training time and RecBole's own valid/test metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.data / "recbole"
    params = {
        "data_path": str(args.data),
        "dataset": "ml",
        "checkpoint_dir": str(work / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "n_layers": 2,
        "n_heads": 2,
        "hidden_size": 64,
        "inner_size": 256,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "learning_rate": 0.001,
        "epochs": args.epochs,
        "stopping_step": 3,
        "train_batch_size": 256,
        "eval_batch_size": 256,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "mode": "full",
            "group_by": "user",
        },
        "metrics": ["NDCG", "Hit"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "device": "cpu",
        "use_gpu": False,
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "log_wandb": False,
        "state": "WARNING",
    }
    config = Config(model="SASRec", config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train.dataset).to("cpu")
    trainer = Trainer(config, model)
    t0 = time.perf_counter()
    _best_valid, valid_result = trainer.fit(train, valid, saved=True, show_progress=False)
    train_s = time.perf_counter() - t0
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    model.eval()

    seqs = json.loads((args.data / "sequences.json").read_text())
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    tok2id = dataset.field2token_id[iid_field]
    id2tok = dataset.field2id_token[iid_field]
    n_items = dataset.item_num  # id 0 is padding
    users, rows = [], []
    t1 = time.perf_counter()
    batch = 256
    keys = list(seqs)
    with torch.no_grad():
        for s in range(0, len(keys), batch):
            part = keys[s : s + batch]
            lists = [[tok2id[t] for t in seqs[u] if t in tok2id][-50:] for u in part]
            length = torch.tensor([max(1, len(x)) for x in lists])
            seq = torch.zeros((len(part), 50), dtype=torch.long)
            for i, x in enumerate(lists):
                seq[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            inter = Interaction({"item_id_list": seq, "item_length": length})
            scores = model.full_sort_predict(inter).view(len(part), n_items)
            rows.append(scores[:, 1:].numpy().astype(np.float32))
            users.extend(int(u) for u in part)
    score_s = time.perf_counter() - t1
    items = np.array([int(t) for t in id2tok[1:]], dtype=np.int64)
    tmp = args.out.with_suffix(".tmp.npz")
    np.savez(tmp, users=np.array(users, np.int64), items=items, scores=np.concatenate(rows))
    os.replace(tmp, args.out)
    print(
        json.dumps(
            {
                "train_s": round(train_s, 2),
                "score_s": round(score_s, 2),
                "epochs_run": int(trainer.cur_step if hasattr(trainer, "cur_step") else -1),
                "recbole_valid": {k: float(v) for k, v in valid_result.items()},
                "recbole_test": {k: float(v) for k, v in test_result.items()},
                "n_items": int(n_items - 1),
                "n_users": len(users),
                "uid_field": uid_field,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
