"""An email class in the style of djoser's (templated-mail's ``BaseEmailMessage``): it keeps the request.

The class renders its subject, text and HTML from a context when it is sent, then hands itself to
Django's ``send()``: the queue gets it with ``request`` (and ``context``) still attached. A view sends
one, as djoser's activation view does.
"""

from django.core.mail import EmailMultiAlternatives
from django.http import HttpRequest, HttpResponse


class ActivationEmail(EmailMultiAlternatives):
    def __init__(self, request: HttpRequest | None = None, context: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.context = context or {}

    def render(self) -> None:
        user, site = self.context["user_name"], self.request.get_host()
        self.subject = f"Activate your account on {site}"
        self.body = f"Hello {user}, follow http://{site}/activate/{self.context['token']}"
        self.attach_alternative(f"<p>Hello {user}, <a href='http://{site}/activate/'>activate</a></p>", "text/html")

    def send(self, to: list[str], *args, **kwargs) -> int:
        self.render()
        self.to = to
        self.from_email = "accounts@example.com"
        return super().send(*args, **kwargs)


def activation_view(request: HttpRequest) -> HttpResponse:
    """Sends the activation email to ``?to=``, with the request and a context, as djoser's views do."""
    email = ActivationEmail(request, context={"user_name": "Ann", "token": "t0k3n"})
    email.extra_headers["X-Sent-From"] = "activation view"
    return HttpResponse(str(email.send([request.GET["to"]])))
