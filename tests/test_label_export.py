"""Labels people can use elsewhere: CSV with each sample's file, import by file, class folders
(torchvision's ImageFolder layout), and the run's labels dataset naming files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from bench.hard_digits import write_folder
from click.testing import CliRunner
from helpers import mlflow_client

from activelab.cli.main import cli
from activelab.errors import LabelFileError
from activelab.tasks.image_cache import list_folder


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "hard"
    write_folder(root, variants=2, limit=20)  # 40 PNGs in class folders
    return root


def image_model(lab, folder, name):
    config = {"dataset.path": str(folder), "trainer.log_model": "false"}
    return lab.create_model(name, dataset="image-folder", config=config)


def cli_run(lab, *args):
    home = ["--home", str(lab.settings.home), "--tracking-uri", lab.settings.tracking_uri]
    out = CliRunner().invoke(cli, [*home, *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_an_image_folder_s_labels_name_their_files_and_import_by_file(local_lab, folder):
    listing = list_folder(folder)
    model = image_model(local_lab, folder, "files")
    model.set_labels({0: listing.targets[0], 7: listing.targets[7], 20: listing.targets[20]})
    text = cli_run(local_lab, "labels", "export", "files")
    lines = text.splitlines()
    assert lines[0] == "sample_index,path,label"
    assert lines[1] == f"0,{listing.files[0]},{listing.classes[listing.targets[0]]}"
    # another model of the same folder takes the file back by path, in any column order
    other = image_model(local_lab, folder, "other")
    by_path = "label,path\n" + "\n".join(
        f"{listing.classes[listing.targets[i]]},{listing.files[i]}" for i in (0, 7, 20)
    )
    csv_file = folder.parent / "by-path.csv"
    csv_file.write_text(by_path + "\n")
    assert "Saved: 3 sample(s) imported" in cli_run(
        local_lab, "labels", "import", "other", str(csv_file)
    )
    assert other.labels.as_dict() == model.labels.as_dict()
    # our own export reads back unchanged; absolute paths inside the folder work too
    assert other.import_labels_csv(text) is None
    absolute = f"{folder / listing.files[3]},{listing.classes[1]}\n"
    other.import_labels_csv(absolute)
    assert other.labels.as_dict()[3] == 1
    # a file that is not in the folder: the line and the folder named, nothing changed
    before = other.labels.as_dict()
    with pytest.raises(LabelFileError, match=r"Line 2: no sample is the file 'elsewhere/x.png'"):
        other.import_labels_csv(f"{listing.files[5]},{listing.classes[0]}\nelsewhere/x.png,0\n")
    assert other.labels.as_dict() == before
    # a model of arrays has no files: a path line says to use indices
    digits = local_lab.create_model("arrays")
    with pytest.raises(LabelFileError, match="not files; give sample indices"):
        digits.import_labels_csv("some/file.png,3\n")
    assert digits.labels_csv().splitlines()[0] == "sample_index,label"


def test_labeled_images_export_as_class_folders(local_lab, folder, tmp_path):
    from torchvision.datasets import ImageFolder

    listing = list_folder(folder)
    model = image_model(local_lab, folder, "folders")
    chosen = [0, 5, 11, 30]
    model.set_labels({i: listing.targets[i] for i in chosen})
    out = cli_run(local_lab, "labels", "export", "folders", str(tmp_path / "copied"),
                  "--layout", "imagefolder")  # fmt: skip
    assert "Copied 4 labeled images into" in out
    read = ImageFolder(str(tmp_path / "copied"))  # torchvision reads it as a data set
    assert len(read) == 4
    found = {Path(p).name: read.classes[t] for p, t in read.samples}
    expected = {
        listing.files[i].replace("/", "__"): listing.classes[listing.targets[i]] for i in chosen
    }
    assert found == expected
    # linked instead of copied: symlinks to the originals
    done = model.export_labeled_folders(tmp_path / "linked", link=True)
    assert done.how == "linked" and done.count == 4
    links = list((tmp_path / "linked").rglob("*.png"))
    assert len(links) == 4 and all(p.is_symlink() and p.resolve().is_file() for p in links)
    # a folder that is not empty is refused before anything is written
    with pytest.raises(LabelFileError, match="not an empty folder"):
        model.export_labeled_folders(tmp_path / "copied")
    # a model of arrays writes its labeled samples as PNGs
    digits = local_lab.create_model("pngs")
    digits.set_labels({0: 0, 1: 1, 2: 2})
    done = digits.export_labeled_folders(tmp_path / "pngs")
    assert done.how == "written" and done.per_class == {"0": 1, "1": 1, "2": 1}
    assert len(ImageFolder(str(tmp_path / "pngs"))) == 3


def test_a_run_s_labels_dataset_names_the_files(local_lab, folder):
    listing = list_folder(folder)
    model = image_model(local_lab, folder, "dataset")
    model.set_labels({i: listing.targets[i] for i in range(0, 40, 4)})
    quick = {"trainer.batch_size": "16", "trainer.labeled_per_batch": "8",
             "trainer.recon_images": "0", "tasks.consistency.samples": "16"}  # fmt: skip
    model.update_config(quick)
    handle = model.launch(epochs=1, system_metrics=False, in_process=True)
    assert handle.wait(timeout=300) == "FINISHED", handle.summary.error
    run = mlflow_client(local_lab).get_run(handle.run_id)
    source = mlflow.data.get_source(run.inputs.dataset_inputs[0])
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(source.load(tmp)).read_text().splitlines()
    assert lines[0] == "sample_index,path,label"
    assert lines[1].split(",")[1] == listing.files[0]
    schema = run.inputs.dataset_inputs[0].dataset.schema
    assert '"path"' in schema
    assert np.all([len(line.split(",")) == 3 for line in lines])
