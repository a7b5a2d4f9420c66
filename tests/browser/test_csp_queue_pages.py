"""The pages of the runs table, the queue and watchdogs run under the content security policy with
no violation and no console error: the workers page, a queued run's page (its queue note's
place pushed over the run page's websocket), the watchdog page and the tags-and-notes form."""

import pytest
from test_csp import Watch, tiny_config

from studio.models import Run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_queue_watchdog_and_table_pages_run_under_the_policy(live_studio, alice, browser, log_in):
    run = Run.objects.create(owner=alice, name="queued run", config=tiny_config(), total_steps=50)
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    watch = Watch(context)
    page = watch.page(context)
    url = live_studio.url
    log_in(page, url, "alice")
    page.wait_for_url(url + "/")
    page.goto(f"{url}/?col=best:reward/mean&col=config:learning_rate&status=queued")
    page.goto(url + "/workers/")
    page.goto(f"{url}/runs/{run.pk}/")
    # the note's place comes with the page (then pushed by studio.queue publish_queue)
    page.wait_for_function("() => document.getElementById('queue-status').dataset.position === '1'", timeout=20_000)
    page.goto(f"{url}/runs/{run.pk}/watchdogs/")
    page.fill("#id_rules", "kl/ref above 0.1 -> pause")
    page.click("#save-watchdogs")
    page.wait_for_selector("#watchdog-rules")
    page.goto(f"{url}/runs/{run.pk}/annotate/")
    page.fill("#id_tags", "csp")
    page.click("#save-annotations")
    page.wait_for_url(url + "/")
    assert watch.problems == [], "\n".join(watch.problems)
    assert all("script-src 'self'" in policy for policy in watch.policies.values()) and len(watch.policies) >= 6
    assert [w.text for w in run.watchdogs.all()] == ["kl/ref above 0.1 -> pause"]
    assert list(run.tags.values_list("name", flat=True)) == ["csp"]
    context.close()
