def handler(job):
    return {"simple": job["input"]}


def shout(job):
    return str(job["input"].get("text", "")).upper()
