"""Object storage end to end: a real S3 API (moto's server) on a loopback port, started here.

Inputs are read by polars' cloud readers from the bucket (CSV, Parquet, a glob), resume refuses
a changed object, results are uploaded to the bucket and read back; a missing bucket, missing
credentials and denied access are one-paragraph errors, exit 2, with nothing sent (the
simulator's counters say so).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from batcher.cli import main
from batcher.errors import JobError
from batcher.input.cloud import glob_regex, missing_credentials, parse_url
from batcher.job import load_job
from tests.conftest import (
    DEMO_ENV,
    REPO,
    Sim,
    clean_profile,
    mobile,
    only_run_dir,
    read_summary,
)

PROGRAMS = ["partner-01", "partner-02"]
# Every variable that could lend credentials or a region from the machine running the tests.
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The standard AWS environment, pointed at the loopback server; the demo API credentials."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        # Never ask a cloud metadata service for anything, whatever a library decides.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        **DEMO_ENV,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def s3_client(endpoint: str, key: str = "testing", secret: str = "testing") -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


@pytest.fixture
def bucket(aws: dict[str, str]) -> str:
    name = f"handoff-{uuid.uuid4().hex[:12]}"
    s3_client(aws["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


def pairs_frame(customers: range) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "mobile": [mobile(i) for i in customers for _ in PROGRAMS],
            "partner_program_name": [p for _ in customers for p in PROGRAMS],
        }
    )


def put_table(endpoint: str, bucket: str, key: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    if key.endswith(".parquet"):
        frame.write_parquet(buffer)
    else:
        frame.write_csv(buffer)
    s3_client(endpoint).put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def cloud_job(
    directory: Path, input_path: str, base_url: str, *, output: str | None = None, extra: str = ""
) -> Path:
    path = directory / "job.toml"
    path.write_text(
        f'name = "cloud"\n[input]\npath = "{input_path}"\n{extra}'
        f'[api]\nbase_url = "{base_url}"\nrate = "1000/second"\ntimeout_seconds = 30\n'
        f'[output]\ndir = "{output or directory / "out"}"\n'
        + (f'staging_dir = "{directory / "staging"}"\n' if output else "")
    )
    return path


def requests_sent(sim: Any) -> int:
    return int(sim.snapshot(pairs=False)["counters"]["requests"])


def test_a_csv_object_is_read_sent_and_fingerprinted(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path
) -> None:
    sim = simulator(clean_profile(state={"link_probability": 1.0}))
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "exports/pairs.csv", pairs_frame(range(40)))
    job = cloud_job(tmp_path, f"s3://{bucket}/exports/pairs.csv", sim.base_url)

    result = CliRunner().invoke(main, ["run", str(job), "--quiet"])

    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "out", "cloud")
    assert read_summary(run_dir)["counts"]["delinked"] == 80
    assert sim.still_linked("mobile", [(mobile(i), p) for i in range(40) for p in PROGRAMS]) == []
    (entry,) = json.loads((run_dir / "manifest.json").read_text())["input"]["files"]
    head = s3_client(aws["AWS_ENDPOINT_URL"]).head_object(Bucket=bucket, Key="exports/pairs.csv")
    assert entry["path"] == f"s3://{bucket}/exports/pairs.csv"
    assert (entry["size"], entry["etag"]) == (head["ContentLength"], head["ETag"])


def test_a_parquet_glob_reads_only_the_matching_objects(
    aws: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    endpoint = aws["AWS_ENDPOINT_URL"]
    put_table(endpoint, bucket, "exports/pairs-1.parquet", pairs_frame(range(0, 10)))
    put_table(endpoint, bucket, "exports/pairs-2.parquet", pairs_frame(range(10, 15)))
    put_table(endpoint, bucket, "exports/other.parquet", pairs_frame(range(100, 200)))
    put_table(endpoint, bucket, "exports/old/pairs-3.parquet", pairs_frame(range(200, 300)))
    job = cloud_job(tmp_path, f"s3://{bucket}/exports/pairs-*.parquet", "simulator")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    summary = read_summary(only_run_dir(tmp_path / "out", "cloud"))
    assert summary["input"]["rows"] == 30 and summary["counts"]["valid"] == 30
    assert [f["path"] for f in summary["input"]["files"]] == [
        f"s3://{bucket}/exports/pairs-1.parquet",
        f"s3://{bucket}/exports/pairs-2.parquet",
    ]


def test_resume_refuses_an_object_changed_since_the_run_started(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path
) -> None:
    sim = simulator(clean_profile())
    endpoint = aws["AWS_ENDPOINT_URL"]
    put_table(endpoint, bucket, "pairs.csv", pairs_frame(range(10)))
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.csv", sim.base_url)
    assert CliRunner().invoke(main, ["run", str(job), "--quiet"]).exit_code == 0
    run_dir = only_run_dir(tmp_path / "out", "cloud")
    # The same size, other content: only the ETag tells.
    put_table(endpoint, bucket, "pairs.csv", pairs_frame(range(10, 20)))
    sent = requests_sent(sim)

    result = CliRunner().invoke(main, ["resume", str(run_dir)])

    assert result.exit_code == 2
    assert f"s3://{bucket}/pairs.csv changed (size" in result.output
    assert "etag" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    assert requests_sent(sim) == sent


def test_results_are_uploaded_to_the_bucket_and_read_back(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path
) -> None:
    sim = simulator(clean_profile(state={"link_probability": 1.0}))
    endpoint = aws["AWS_ENDPOINT_URL"]
    frame = pairs_frame(range(20)).vstack(
        pl.DataFrame({"mobile": ["12", mobile(300_000)], "partner_program_name": ["p", "p"]})
    )
    put_table(endpoint, bucket, "in/pairs.csv", frame)
    job = cloud_job(
        tmp_path, f"s3://{bucket}/in/pairs.csv", sim.base_url, output=f"s3://{bucket}/results/"
    )

    result = CliRunner().invoke(main, ["run", str(job), "--quiet"])

    assert result.exit_code == 1, result.output
    staging = only_run_dir(tmp_path / "staging", "cloud")
    s3 = s3_client(endpoint)
    prefix = f"results/cloud/{staging.name}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert sorted(o["Key"].removeprefix(prefix) for o in listed) == [
        "failures.csv",
        "outcomes.parquet",
        "rejects.csv",
        "report.html",
        "summary.json",
    ]
    # What the data team reads is what the run wrote.
    body = s3.get_object(Bucket=bucket, Key=prefix + "outcomes.parquet")["Body"].read()
    uploaded = pl.read_parquet(io.BytesIO(body))
    assert uploaded.equals(pl.read_parquet(staging / "outcomes.parquet"))
    assert uploaded.height == 42
    summary = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "summary.json")["Body"].read())
    assert summary["counts"]["delinked"] == 40 and summary["counts"]["failed"] == 1
    assert summary["settings"]["output"]["dir"] == f"s3://{bucket}/results"
    # What a resume needs stays in the staging folder, and only there.
    assert (staging / "manifest.json").is_file()


def test_validate_uploads_its_rejects_and_summary(
    aws: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    frame = pairs_frame(range(3)).vstack(
        pl.DataFrame({"mobile": ["12"], "partner_program_name": ["partner-01"]})
    )
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "pairs.csv", frame)
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.csv", "simulator", output=f"s3://{bucket}/r")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    staging = only_run_dir(tmp_path / "staging", "cloud")
    listed = s3_client(aws["AWS_ENDPOINT_URL"]).list_objects_v2(Bucket=bucket, Prefix="r/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        f"r/cloud/{staging.name}/{name}"
        for name in ("plan-preview.json", "rejects.csv", "summary.json")
    ]


def test_a_stopped_run_uploads_what_it_has_and_its_resume_uploads_again(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path, monkeypatch: Any
) -> None:
    sim = simulator(clean_profile(state={"link_probability": 1.0}))
    endpoint = aws["AWS_ENDPOINT_URL"]
    put_table(endpoint, bucket, "in/pairs.csv", pairs_frame(range(10)))
    job = cloud_job(
        tmp_path, f"s3://{bucket}/in/pairs.csv", sim.base_url, output=f"s3://{bucket}/results"
    )
    monkeypatch.setenv("CAPILLARY_PASSWORD", "not-the-password")  # refused: the run stops

    stopped = CliRunner().invoke(main, ["run", str(job), "--quiet"])

    assert stopped.exit_code == 3, stopped.output
    staging = only_run_dir(tmp_path / "staging", "cloud")
    s3 = s3_client(endpoint)
    key = f"results/cloud/{staging.name}/summary.json"
    summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert summary["stopped"] and summary["counts"]["retryable"] == 20
    failures = s3.get_object(Bucket=bucket, Key=f"results/cloud/{staging.name}/failures.csv")
    assert pl.read_csv(failures["Body"].read(), infer_schema=False).height == 20
    monkeypatch.setenv("CAPILLARY_PASSWORD", DEMO_ENV["CAPILLARY_PASSWORD"])

    resumed = CliRunner().invoke(main, ["resume", str(staging), "--quiet"])

    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert summary["stopped"] is None and summary["counts"]["delinked"] == 20


def assert_refused_before_sending(result: Any, sim: Any, *phrases: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.output.strip()
    assert message.startswith("Error: ")
    for phrase in phrases:
        assert phrase in message
    assert requests_sent(sim) == 0


def test_a_missing_bucket_is_exit_2_and_nothing_is_sent(
    aws: dict[str, str], simulator: Sim, tmp_path: Path
) -> None:
    sim = simulator(clean_profile())
    job = cloud_job(tmp_path, "s3://no-such-bucket-here/pairs.csv", sim.base_url)
    result = CliRunner().invoke(main, ["run", str(job)])
    assert_refused_before_sending(
        result,
        sim,
        "Cannot read s3://no-such-bucket-here/pairs.csv: the bucket does not exist",
        "NoSuchBucket",
    )
    assert not (tmp_path / "out").exists()


def test_a_missing_output_bucket_is_exit_2_and_nothing_is_sent(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path
) -> None:
    sim = simulator(clean_profile())
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "pairs.csv", pairs_frame(range(3)))
    job = cloud_job(
        tmp_path, f"s3://{bucket}/pairs.csv", sim.base_url, output="s3://no-such-results/x"
    )
    result = CliRunner().invoke(main, ["run", str(job)])
    assert_refused_before_sending(result, sim, "[output] dir", "the bucket does not exist")


def test_missing_credentials_are_exit_2_naming_the_variables(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path, monkeypatch: Any
) -> None:
    sim = simulator(clean_profile())
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "pairs.csv", pairs_frame(range(3)))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.csv", sim.base_url)
    result = CliRunner().invoke(main, ["run", str(job)])
    assert_refused_before_sending(
        result, sim, "No credentials for s3://", "AWS_ACCESS_KEY_ID", "never go in the job file"
    )


def iam_user(endpoint: str, statements: list[dict[str, Any]]) -> dict[str, str]:
    """A new IAM user on the moto server with these policy statements; its access key."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    user = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="only-this",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key: dict[str, str] = iam.create_access_key(UserName=user)["AccessKey"]
    return key


def test_access_denied_is_exit_2_and_nothing_is_sent(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path, monkeypatch: Any
) -> None:
    """moto enforces IAM policies once its no-auth allowance is spent: a real refusal.

    The user may read another bucket only."""
    from moto import settings

    sim = simulator(clean_profile())
    endpoint = aws["AWS_ENDPOINT_URL"]
    put_table(endpoint, bucket, "pairs.csv", pairs_frame(range(3)))
    key = iam_user(
        endpoint,
        [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": ["arn:aws:s3:::someone-else", "arn:aws:s3:::someone-else/*"],
            }
        ],
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.csv", sim.base_url)

    result = CliRunner().invoke(main, ["run", str(job)])

    assert_refused_before_sending(result, sim, "access denied", "s3:GetObject")


def test_a_glob_matching_no_object_is_a_clear_error(
    aws: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    job = cloud_job(tmp_path, f"s3://{bucket}/exports/*.csv", "simulator")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert f"Input glob s3://{bucket}/exports/*.csv matches no object" in result.output


def test_secret_looking_storage_options_are_refused(tmp_path: Path) -> None:
    for key in ("aws_secret_access_key", "aws_session_token", "azure_storage_account_key"):
        job = cloud_job(
            tmp_path, "s3://b/x.csv", "simulator", extra=f'storage_options = {{ {key} = "x" }}\n'
        )
        with pytest.raises(JobError, match=f"'input.storage_options.{key}' looks like a secret"):
            load_job(job)
    job = cloud_job(
        tmp_path,
        "s3://b/x.csv",
        "simulator",
        extra='storage_options = { aws_region = "eu-west-1", skip_signature = true }\n',
    )
    assert load_job(job).input.storage_options == {
        "aws_region": "eu-west-1",
        "skip_signature": "true",
    }


def test_which_environments_count_as_credentials() -> None:
    s3 = parse_url("s3://b/k.csv")
    assert missing_credentials(s3, {}, {}) is not None
    assert missing_credentials(s3, {}, {"AWS_ACCESS_KEY_ID": "a"}) is not None
    assert (
        missing_credentials(s3, {}, {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
        is None
    )
    assert missing_credentials(s3, {}, {"AWS_PROFILE": "ops"}) is None
    assert missing_credentials(s3, {"skip_signature": "true"}, {}) is None
    assert missing_credentials(parse_url("https://h/x.csv"), {}, {}) is None
    gcs = missing_credentials(parse_url("gs://b/k"), {}, {})
    assert gcs is not None and "GOOGLE_APPLICATION_CREDENTIALS" in gcs
    azure = missing_credentials(parse_url("az://c/k"), {}, {})
    assert azure is not None and "AZURE_STORAGE_ACCOUNT_KEY" in azure


def test_object_urls_split_into_a_store_root_and_a_key() -> None:
    abfs = parse_url("abfss://handoffs@acct.dfs.core.windows.net/delink/pairs-*.csv")
    assert (abfs.cloud, abfs.root) == ("azure", "abfss://handoffs@acct.dfs.core.windows.net")
    assert abfs.key == "delink/pairs-*.csv"
    gcs = parse_url("gs://bkt/a/b.parquet")
    assert (gcs.cloud, gcs.root, gcs.key) == ("gcs", "gs://bkt", "a/b.parquet")
    assert parse_url("az://container/x.xlsx").cloud == "azure"


def test_key_globs_stay_within_a_folder_unless_doubled() -> None:
    assert glob_regex("exports/pairs-*.csv").match("exports/pairs-1.csv")
    assert not glob_regex("exports/pairs-*.csv").match("exports/old/pairs-1.csv")
    assert glob_regex("exports/**/pairs-*.csv").match("exports/old/pairs-1.csv")
    assert glob_regex("exports/**/pairs-*.csv").match("exports/pairs-1.csv")
    assert glob_regex("p-[!0]?.csv").match("p-1a.csv")
    assert not glob_regex("p-[!0]?.csv").match("p-0a.csv")


def test_the_s3_example_job_is_a_valid_job() -> None:
    job = load_job(REPO / "jobs/examples/s3.toml")
    assert job.input.path.startswith("s3://") and job.output_url is not None
    assert job.input.storage_options == {"aws_region": "eu-west-1"}


@pytest.fixture
def web_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on loopback (aiohttp: ranges and ETags, as a CDN or bucket has)."""
    import asyncio
    import threading

    from aiohttp import web

    folder = tmp_path / "www"
    folder.mkdir()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_static("/", folder)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", folder
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def test_one_file_over_https_style_url_is_read_and_fingerprinted(
    web_folder: tuple[str, Path], tmp_path: Path
) -> None:
    """http:// is allowed on loopback only; it takes the https:// path (no credentials)."""
    base, folder = web_folder
    pairs_frame(range(5)).write_csv(folder / "pairs.csv")
    job = cloud_job(tmp_path, f"{base}/pairs.csv", "simulator")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    summary = read_summary(only_run_dir(tmp_path / "out", "cloud"))
    (entry,) = summary["input"]["files"]
    assert summary["input"]["rows"] == 10
    assert entry["path"] == f"{base}/pairs.csv" and entry["etag"]
    glob = cloud_job(tmp_path, f"{base}/pairs-*.csv", "simulator")
    refused = CliRunner().invoke(main, ["validate", str(glob)])
    assert refused.exit_code == 2 and "https:// names a single file" in refused.output


def test_plain_http_to_another_host_is_refused(tmp_path: Path) -> None:
    job = cloud_job(tmp_path, "http://example.com/pairs.csv", "simulator")
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 2
    assert "plain http to a non-loopback host" in result.output


def test_an_excel_workbook_in_a_bucket(aws: dict[str, str], bucket: str, tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Pairs"
    sheet.append(["mobile", "partner_program_name"])
    sheet.append([919800000001, "partner-01"])  # a number in Excel, its digits here
    sheet.append(["919800000002", "partner-01"])
    buffer = io.BytesIO()
    book.save(buffer)
    s3_client(aws["AWS_ENDPOINT_URL"]).put_object(
        Bucket=bucket, Key="hand-off.xlsx", Body=buffer.getvalue()
    )
    job = cloud_job(
        tmp_path, f"s3://{bucket}/hand-off.xlsx", "simulator", extra='sheet = "Pairs"\n'
    )

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "out", "cloud")
    preview = json.loads((run_dir / "plan-preview.json").read_text())
    bodies = preview["first_requests"]
    sent = [c["customer"]["mobile"] for body in bodies for c in body["deLinkCustomers"]]
    assert sent == ["919800000001", "919800000002"]


def test_aws_profile_credentials_are_read_from_the_shared_credentials_file(
    aws: dict[str, str], bucket: str, tmp_path: Path, monkeypatch: Any
) -> None:
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "pairs.parquet", pairs_frame(range(4)))
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        "[handoff]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "handoff")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.parquet", "simulator")

    result = CliRunner().invoke(main, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    assert read_summary(only_run_dir(tmp_path / "out", "cloud"))["input"]["rows"] == 8


def test_a_signed_url_or_user_password_is_refused_and_never_echoed(tmp_path: Path) -> None:
    for url in (
        "https://acct.blob.core.windows.net/c/pairs.csv?sv=2024&sig=SECRETSIG",
        "https://user:SECRETPW@files.example.com/pairs.csv",
    ):
        job = cloud_job(tmp_path, url, "simulator")
        result = CliRunner().invoke(main, ["validate", str(job)])
        assert result.exit_code == 2
        assert "carries credentials or a query string" in result.output
        assert "SECRET" not in result.output


def test_an_output_url_with_a_query_is_refused(tmp_path: Path) -> None:
    job = cloud_job(tmp_path, "s3://b/x.csv", "simulator", output="s3://bkt/r?X-Amz-Signature=S")
    with pytest.raises(JobError, match=r"output\.dir' carries credentials or a query string"):
        load_job(job)


def test_a_refused_upload_keeps_the_results_in_staging_and_says_so(
    aws: dict[str, str], bucket: str, simulator: Sim, tmp_path: Path, monkeypatch: Any
) -> None:
    """May read and list the bucket, may not write to it: the run happens, the upload fails."""
    from moto import settings

    sim = simulator(clean_profile(state={"link_probability": 1.0}))
    endpoint = aws["AWS_ENDPOINT_URL"]
    put_table(endpoint, bucket, "pairs.csv", pairs_frame(range(5)))
    key = iam_user(
        endpoint,
        [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    job = cloud_job(
        tmp_path, f"s3://{bucket}/pairs.csv", sim.base_url, output=f"s3://{bucket}/results"
    )

    result = CliRunner().invoke(main, ["run", str(job), "--log-format", "json"])

    assert result.exit_code == 1, result.output  # every pair delinked, but not delivered
    assert sim.still_linked("mobile", [(mobile(i), p) for i in range(5) for p in PROGRAMS]) == []
    staging = only_run_dir(tmp_path / "staging", "cloud")
    assert read_summary(staging)["counts"]["delinked"] == 10
    events = [json.loads(line) for line in (staging / "run.log.jsonl").read_text().splitlines()]
    (failed,) = [e for e in events if e["event"] == "results.upload_failed"]
    assert failed["results"] == str(staging) and "access denied" in failed["error"]


def test_output_on_the_command_line_may_be_a_bucket(
    aws: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """--output s3://... uploads there; the job's own output.dir is then the staging folder."""
    put_table(aws["AWS_ENDPOINT_URL"], bucket, "pairs.csv", pairs_frame(range(2)))
    job = cloud_job(tmp_path, f"s3://{bucket}/pairs.csv", "simulator")

    result = CliRunner().invoke(main, ["validate", str(job), "--output", f"s3://{bucket}/cli"])

    assert result.exit_code == 0, result.output
    staging = only_run_dir(tmp_path / "out", "cloud")
    listed = s3_client(aws["AWS_ENDPOINT_URL"]).list_objects_v2(Bucket=bucket, Prefix="cli/")
    assert f"cli/cloud/{staging.name}/summary.json" in {o["Key"] for o in listed["Contents"]}
